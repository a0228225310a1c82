"""Network blocks shared by the domains (filled by the module issues). Importing this package imports torch."""
