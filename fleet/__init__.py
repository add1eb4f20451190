"""runner-fleet: the validated stack configuration and the program that builds the fleet from it."""
