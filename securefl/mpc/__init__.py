"""Secret-sharing and masking protocols."""
