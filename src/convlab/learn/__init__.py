"""Does it learn? Statistics over probe runs, verdicts and hints, the report and its pictures."""
