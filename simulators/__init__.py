"""Stand-ins for the two ends of the pipeline this project cannot run: the mainframe and the Java consumer."""
