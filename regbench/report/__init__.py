"""The report: sections, figures and the Markdown and HTML pages."""
