"""The asyncio gateway: sensor levels in, light overrides and nudges out."""
