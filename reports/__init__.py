"""Turn result CSVs into paper figures and tables: ``bench report``."""
