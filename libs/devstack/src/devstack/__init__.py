"""The Switchboard development stack and command-line tool."""
