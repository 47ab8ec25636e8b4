package deliver

// SetBatchHook makes every batch's goroutine call h before sending
// (nil: none). Tests only.
func SetBatchHook(h func(number int)) {
	if h == nil {
		batchHook.Store(nil)
		return
	}
	batchHook.Store(&h)
}
