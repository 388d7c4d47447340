"""Search: parameter registry, index extraction and query parsing. Pure: no SQL here."""
