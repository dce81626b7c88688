"""Scoring models on eye-tracking records: the MIT metrics over a test split, with floor and ceiling rows."""
