"""Showing results: figures and tables stamped with what made them (``reporting``), image grids,
strips and the interactive explorers (``viz``). They draw what they are given."""
