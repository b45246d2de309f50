"""Reading results: statistics and power, the paper's claims and their verdicts, tables and
figures (`report/`). Reads tables, never models."""
