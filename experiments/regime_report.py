"""The regime study's report: docs/REGIME.md from its records."""


def write(records, options, protocol):
    print(f"{len(records)} records")
