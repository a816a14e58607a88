"""Plotly figure builders, one module per area (gap, loss, training, sweep, teaching).

Each builder takes library objects (``Embeddings``, ``GapDecomposition``, history rows,
DataFrames) and returns a ``plotly.graph_objects.Figure``; notebooks only call ``.show()``.
"""
