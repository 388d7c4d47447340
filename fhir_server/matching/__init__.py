"""Provider matching: candidate loading, pure ranking and the $match / $update-capacity
operation handlers (rules in mappers/DIRECTORY.md)."""
