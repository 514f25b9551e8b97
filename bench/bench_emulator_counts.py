"""The emulator's counts mode at ten million upserts: its process's peak RSS, and counts and digest checked.

`bench_10m` needs an emulator that can take ten million subscribers; this checks that one can, without dlt in
the way: 1000-row `POST /batch/subscribers` requests straight from this process to an emulator in its own
process (`--records counts`, limits raised), then the summary's people, upserts and digest against the figures
computed here, and the emulator's peak RSS (VmHWM). Claim: a few hundred MB.

    .venv/bin/python -m bench.bench_emulator_counts --rows 10000000
"""

from __future__ import annotations

import argparse
import json
import time

import httpx

from bento_api.emulator.codec import canonical, dumps
from bento_api.emulator.hashset import MASK64, hashes_of, wrapping_sum
from bento_api.emulator.tally import format_digest

from .emulator_process import emulator_process

BATCH = 1000
CLAIM_MB = 400.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=10_000_000)
    args = parser.parse_args()
    emu_args = ["--records", "counts", "--no-rate-limit", "--subscribers", "0"]
    digest = 0
    started = time.perf_counter()
    with emulator_process(emu_args) as emu:
        creds = emu.credentials
        with httpx.Client(base_url=creds["base_url"], auth=(creds["publishable_key"], creds["secret_key"]),
                          params={"site_uuid": creds["site_uuid"]}, headers={"User-Agent": "bento-dlt-bench/1",
                          "Content-Type": "application/json"}, timeout=60) as client:
            for start in range(0, args.rows, BATCH):
                rows = [{"email": f"user{i}@example.com", "plan": ["free", "pro"][i % 2], "score": i}
                        for i in range(start, min(args.rows, start + BATCH))]
                digest = (digest + wrapping_sum(hashes_of(canonical(r) for r in rows))) & MASK64
                client.post("/batch/subscribers", content=dumps({"subscribers": rows})).raise_for_status()
        elapsed = time.perf_counter() - started
        summary = emu.summary()
        peak = emu.peak_rss_mb()
    objects = summary["objects"]
    result = {
        "rows": args.rows,
        "seconds": round(elapsed, 1),
        "requests": summary["requests"]["total"],
        "people": objects["subscribers"],
        "upserts": objects["accepted_by_path"].get("/batch/subscribers", 0),
        "digest_matches": objects["digest_by_path"].get("/batch/subscribers") == format_digest(digest),
        "hash_bytes": objects["hash_bytes"],
        "emulator_peak_rss_mb": round(peak, 1),
    }
    print(json.dumps(result, indent=2))
    held = (result["people"] == result["upserts"] == args.rows and result["digest_matches"] and peak <= CLAIM_MB)
    print("HOLDS" if held else "DOES NOT HOLD",
          f"(every row counted and digested, emulator peak RSS <= {CLAIM_MB:g} MB)")


if __name__ == "__main__":
    main()
