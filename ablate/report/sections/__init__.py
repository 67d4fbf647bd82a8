"""The report's markdown sections, one module per part of the report (``ablate.report.markdown``
puts them together).

Everything that comes from a study file (labels, levels, names, environment values) goes through
:func:`ablate.report.fmt.escape`, so it renders as text on GitHub: no raw HTML, no broken tables.
"""
