"""Mapping on whole Arrow batches: vectorized where Arrow gives Python's exact result, `map_row` for the rest.

`map_subscriber_batch` gives, for every row of a subscribers batch, what `mapping.map_row` gives for it (payload,
commands, error, dropped and reserved columns) and its version 2 fingerprint (`subscriber_fingerprint.py`),
building payload dicts only for the rows asked for. A sink uses it as:

    mapped = map_subscriber_batch(items, options)          # items: the RecordBatch or Table dlt hands over
    mapped.errors                                          # {row: (reason, detail)}; mapped.rows([...]) for rejects
    mapped.emails, mapped.fingerprints, mapped.unsubscribes   # what the ledger needs to find unchanged rows
    payloads, commands = mapped.payloads(rows_to_send)     # dicts only for the rows that will be sent
    dropped, reserved, ignored = mapped.notes()            # for the run report
"""

from .subscribers import SubscriberBatch, as_record_batch, map_subscriber_batch

__all__ = ["SubscriberBatch", "as_record_batch", "map_subscriber_batch"]
