"""What every domain uses: errors, the subprocess wrapper, schema, checks, safe file access."""
