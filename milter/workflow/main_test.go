package workflow_test

import (
	"testing"

	"github.com/listcrypt/listcrypt/keyring/store/storetest"
)

// The reply limit tests also run on PostgreSQL (storetest starts it).
func TestMain(m *testing.M) { storetest.Main(m) }
