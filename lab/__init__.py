"""Lab of real hosts, a GitHub double and an executor that carries out the program's remote commands."""
