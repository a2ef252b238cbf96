"""``python -m estimators``: print the registry as the Markdown table the documentation shows (docs/api.md)."""

import argparse

from . import ANY_Q, ESTIMATORS


def table() -> str:
    rows = ["| name | q | gradient estimate | requires | unbiased for | reference |",
            "|---|---|---|---|---|---|"]
    for e in ESTIMATORS.values():
        kinds = "any" if set(e.q_kinds) == set(ANY_Q) else ", ".join(e.q_kinds)
        target = "the ELBO (seed eq. 4)" if e.objective == "elbo" else "the K-sample IWAE bound"
        cells = [c.replace("|", "\\|") for c in (e.equation, e.requires)]
        rows.append(f"| `{e.name}` | {kinds} | {cells[0]} | {cells[1]} | "
                    f"{target if e.unbiased else 'biased'} | {e.reference} |")
    return "\n".join(rows)


if __name__ == "__main__":
    argparse.ArgumentParser(prog="python -m estimators",
                            description="Print the estimator registry as a Markdown table.").parse_args()
    print(table())
