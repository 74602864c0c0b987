package workflows

// SetExpiryWarningUnversioned makes the warning before expiry the change it
// would have been without workflow.GetVersion, for the test that shows the
// replayer catches it; it returns the undo.
func SetExpiryWarningUnversioned() (undo func()) {
	expiryWarningUnversioned = true
	return func() { expiryWarningUnversioned = false }
}

// SetWorkflowV3Unversioned makes every run take workflow v3's branches
// without asking GetVersion; it returns the undo.
func SetWorkflowV3Unversioned() (undo func()) {
	workflowV3Unversioned = true
	return func() { workflowV3Unversioned = false }
}
