"""Tests of vlarena.data (a package, so test module names may repeat in other folders)."""
