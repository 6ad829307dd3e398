"""A run's records: its files written atomically (store.py), the lock held while it trains
(locks.py), the named fault points its tests stop at (faults.py), what produced the numbers
(provenance.py), and the live loggers that mirror the rows (loggers.py)."""
