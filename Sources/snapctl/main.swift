import ArgumentParser
import ctl

// snapctl: its commands are in the ctl library.
Snapctl.main()
