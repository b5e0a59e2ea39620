"""Subject images: loading and validating a subject set, the bundled subject, 8-bit conversions."""
