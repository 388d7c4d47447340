"""The Gravity SDOH Clinical Care conformance test kit: a client of any FHIR R4 server.

`python -m fhir_server conformance run ...` tests a server for one IG actor;
`python -m fhir_server conformance simulate ...` runs a simulated partner against it.
This package imports nothing from the server it ships with (see tests/test_conformance_kit.py):
it talks HTTP only, so it tests our server exactly as it tests anybody else's.
"""
