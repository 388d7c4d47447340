// Hand-authored essentials of the US Core 7.0.0 profiles that the SDOHCC profiles inherit,
// plus the Subscriptions Backport 1.1.0 Subscription profile and the SDC 3.0.0
// QuestionnaireResponse essentials.  Starting point: US Core 5.0.1 definitions in
// shared/fhir-r4/uscore-v5.0.1-structuredefinitions.json (Patient) and the notes; the 7.0.0
// differences applied are listed in profiles/README.md.  Only rules that constrain instances
// (cardinality, fixed/pattern, types, targets, required bindings, invariants) and MS flags are kept.

Profile: USCorePatientProfile
Parent: Patient
Id: us-core-patient
* obeys us-core-6
* identifier 1..* MS
* identifier.system 1..1 MS
* identifier.value 1..1 MS
* name 1..* MS
* name.family MS
* name.given MS
* name.use MS
* name.suffix MS
* name.period MS
* telecom MS
* telecom.system 1..1 MS
* telecom.system from http://hl7.org/fhir/ValueSet/contact-point-system (required)
* telecom.value 1..1 MS
* telecom.use MS
* telecom.use from http://hl7.org/fhir/ValueSet/contact-point-use (required)
* gender 1..1 MS
* gender from http://hl7.org/fhir/ValueSet/administrative-gender (required)
* birthDate MS
* address MS
* address.line MS
* address.city MS
* address.state MS
* address.postalCode MS
* address.period MS
* communication MS
* communication.language 1..1 MS
* link.other 1..1
* link.type 1..1

Invariant: us-core-6
Description: "Either Patient.name.given and/or Patient.name.family SHALL be present or a Data Absent Reason Extension SHALL be present."
Severity: #error
Expression: "(name.family.exists() or name.given.exists()) xor extension.where(url='http://hl7.org/fhir/StructureDefinition/data-absent-reason').exists()"

Profile: USCoreOrganizationProfile
Parent: Organization
Id: us-core-organization
* identifier MS
* identifier.system MS
* identifier.value MS
* active 1..1 MS
* name 1..1 MS
* telecom MS
* address MS
* address.line ..4 MS
* address.city MS
* address.state MS
* address.postalCode MS
* address.country MS

Profile: USCorePractitionerProfile
Parent: Practitioner
Id: us-core-practitioner
* identifier 1..* MS
* identifier.system 1..1 MS
* identifier.value 1..1 MS
* name 1..* MS
* name.family 1..1 MS
* telecom MS
* telecom.system 1..1 MS
* telecom.value 1..1 MS
* address MS

Profile: USCorePractitionerRoleProfile
Parent: PractitionerRole
Id: us-core-practitionerrole
* practitioner MS
* practitioner only Reference(USCorePractitionerProfile)
* organization MS
* organization only Reference(USCoreOrganizationProfile)
* code MS
* specialty MS
* location MS
* telecom MS
* telecom.system 1..1 MS
* telecom.value 1..1 MS
* endpoint MS

Profile: USCoreLocationProfile
Parent: Location
Id: us-core-location
* identifier MS
* status MS
* name 1..1 MS
* type MS
* telecom MS
* address MS
* address.line MS
* address.city MS
* address.state MS
* address.postalCode MS
* managingOrganization MS
* managingOrganization only Reference(USCoreOrganizationProfile)

Profile: USCoreGoalProfile
Parent: Goal
Id: us-core-goal
* lifecycleStatus MS
* description 1..1 MS
* subject 1..1 MS
* subject only Reference(USCorePatientProfile)
* start[x] MS
* target MS
* target.due[x] MS
* expressedBy MS

Profile: USCoreServiceRequestProfile
Parent: ServiceRequest
Id: us-core-servicerequest
* status 1..1 MS
* intent 1..1 MS
* category MS
* code 1..1 MS
* subject 1..1 MS
* subject only Reference(USCorePatientProfile or Group or Device or USCoreLocationProfile)
* encounter MS
* occurrence[x] MS
* authoredOn MS
* requester MS

Profile: USCoreObservationScreeningAssessmentProfile
Parent: Observation
Id: us-core-observation-screening-assessment
* status MS
* category 1..* MS
* category ^slicing.discriminator.type = #pattern
* category ^slicing.discriminator.path = "$this"
* category ^slicing.rules = #open
* category contains
    survey 0..1 MS and
    screening-assessment 0..* MS
* category[survey] = http://terminology.hl7.org/CodeSystem/observation-category#survey
* category[screening-assessment] from http://hl7.org/fhir/us/core/ValueSet/us-core-screening-assessment-observation-category (required)
* code 1..1 MS
* subject 1..1 MS
* subject only Reference(USCorePatientProfile or Group or Device or USCoreLocationProfile)
* effective[x] MS
* effective[x] only dateTime or Period or Timing or instant
* performer MS
* value[x] MS
* hasMember MS
* derivedFrom MS

Profile: USCoreSimpleObservationProfile
Parent: Observation
Id: us-core-simple-observation
* status MS
* category 1..* MS
* category ^slicing.discriminator.type = #pattern
* category ^slicing.discriminator.path = "$this"
* category ^slicing.rules = #open
* category contains us-core 0..* MS
* category[us-core] from http://hl7.org/fhir/us/core/ValueSet/us-core-simple-observation-category (required)
* code 1..1 MS
* subject 1..1 MS
* subject only Reference(USCorePatientProfile or Group or Device or USCoreLocationProfile)
* effective[x] MS
* effective[x] only dateTime or Period or Timing or instant
* performer MS
* value[x] MS
* derivedFrom MS

// From HL7/US-Core input/resources/StructureDefinition-us-core-observation-sexual-orientation
// (the parent of SDOHCC Observation Sexual Orientation).
Profile: USCoreObservationSexualOrientationProfile
Parent: Observation
Id: us-core-observation-sexual-orientation
* obeys us-core-2
* status MS
* status from http://hl7.org/fhir/ValueSet/observation-status (required)
* code = http://loinc.org#76690-7
* code MS
* subject 1..1 MS
* subject only Reference(USCorePatientProfile)
* effective[x] MS
* effective[x] only dateTime or Period or Timing or instant

Profile: BackportSubscription
Parent: Subscription
Id: backport-subscription
* criteria 1..1 MS
* criteria.extension ^slicing.discriminator.type = #value
* criteria.extension ^slicing.discriminator.path = "url"
* criteria.extension ^slicing.rules = #open
* criteria.extension contains http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria named filterCriteria 0..* MS
* channel.extension ^slicing.discriminator.type = #value
* channel.extension ^slicing.discriminator.path = "url"
* channel.extension ^slicing.rules = #open
* channel.extension contains
    http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period named heartbeatPeriod 0..1 MS and
    http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-timeout named timeout 0..1 MS and
    http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-max-count named maxCount 0..1 MS
* channel.type MS
* channel.endpoint MS
* channel.payload 1..1 MS
* channel.payload.extension ^slicing.discriminator.type = #value
* channel.payload.extension ^slicing.discriminator.path = "url"
* channel.payload.extension ^slicing.rules = #open
* channel.payload.extension contains http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content named content 1..1 MS
* channel.payload.extension[content].valueCode 1..1
* channel.payload.extension[content].valueCode from http://hl7.org/fhir/uv/subscriptions-backport/ValueSet/backport-content-value-set (required)
* channel.header MS

Profile: SDCQuestionnaireResponse
Parent: QuestionnaireResponse
Id: sdc-questionnaireresponse
* questionnaire 1..1 MS
* status MS
* subject MS
* authored MS
* author MS
* item MS
* item.linkId MS
* item.answer MS
* item.answer.value[x] MS
