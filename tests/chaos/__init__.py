"""The chaos suite: real workloads, real faults, and a ledger that proves no job is lost."""
