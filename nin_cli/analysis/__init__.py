"""From run directories to the papers' results: phases, decay times, tables and figures."""
