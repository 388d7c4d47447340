"""Pure mappers: dict in, dict out (scoring, extraction, recommendations)."""
