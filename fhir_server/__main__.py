"""`python -m fhir_server ...`: see fhir_server/cli.py."""

from fhir_server.cli import main

raise SystemExit(main())
