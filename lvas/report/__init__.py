"""Report generation: published numbers, table writers, figures."""
