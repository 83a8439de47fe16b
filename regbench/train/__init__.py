"""Training: which runs a variant makes (plan), the engines, executors, the run store, records and tracking."""
