"""The officer's console (Textual). Reads and acts only through ``appliance.service``."""
