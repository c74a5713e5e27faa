"""The parts of a snapshot as plain, frozen data: what each collector gathers and the checks read (no I/O here)."""
