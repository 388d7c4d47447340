"""Developer tools that (re)generate the shipped conformance data. Not used at run time."""
