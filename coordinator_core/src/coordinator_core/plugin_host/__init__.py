"""Plugin discovery, the frozen registry of records, and configuration."""
