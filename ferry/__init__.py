"""Ferry's vocabulary: pydantic models and pure domain logic. No I/O, no clock, no randomness."""
