"""Developer tools of the conformance kit (read ../shared; never imported by the kit)."""
