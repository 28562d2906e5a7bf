"""Test configuration: float64 is needed to compare with torch at 1e-9."""

import jax

jax.config.update("jax_enable_x64", True)


# Fuzz tests record how many Hypothesis examples ran as a user property of
# their report: pytest-xdist forwards those from its workers, so the counts
# reach the controller's summary however the tests were distributed.
FUZZ_COUNT_PREFIX = "hypothesis_fuzz_examples:"


def pytest_terminal_summary(terminalreporter):
  counts = {}
  for reports in terminalreporter.stats.values():
    for report in reports:
      if getattr(report, "when", None) != "call":
        continue
      for key, value in getattr(report, "user_properties", ()):
        if isinstance(key, str) and key.startswith(FUZZ_COUNT_PREFIX):
          counts[key[len(FUZZ_COUNT_PREFIX):]] = value
  if counts:
    terminalreporter.write_sep("-", "hypothesis fuzz examples")
    terminalreporter.write_line("hypothesis fuzz examples: " + ", ".join(
        f"{name}={count}" for name, count in sorted(counts.items())))
