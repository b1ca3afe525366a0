"""Printable documents (PDF through WeasyPrint, with Debian's Noto CJK fonts) and CSV."""
