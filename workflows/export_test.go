package workflows

// SetExpiryWarningUnversioned makes the warning before expiry the change it
// would have been without workflow.GetVersion, for the test that shows the
// replayer catches it; it returns the undo.
func SetExpiryWarningUnversioned() (undo func()) {
	expiryWarningUnversioned = true
	return func() { expiryWarningUnversioned = false }
}
