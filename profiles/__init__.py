"""Conformance resources (Gravity SDOHCC 3.0.0, US Core 7.0.0 essentials, backport Subscription,
SDC QuestionnaireResponse) and the profile validator.

Entry points: ``profiles.validator.validate``, ``profiles.loader.registry``,
``profiles.policy.required_profiles``.
"""
