"""Everything here runs outside the monitored process: connecting to agents,
finding them, and reading dump files, behind one ``Source`` interface."""
