"""The clerks' page templates (/sessions, /recordings), served by recorder/clerk_pages.py."""
