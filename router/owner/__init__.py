"""The queue owner process (issue 12): `python -m router.owner owner`."""
