package keyring

import "testing"

// WKD names as gpg-wks-client --print-wkd-hash prints them (GnuPG 2.2;
// cmd/listcrypt's TestWKDExport asks the tool itself). Joe.Doe is the
// example of draft-koch-openpgp-webkey-service §3.1.
func TestWKDHash(t *testing.T) {
	for local, want := range map[string]string{
		"devs":       "ug4e5kbfaehhp5gowi8m9oeikmm99pmx",
		"Dev.Team-X": "xu1jdsj34on3xujjzcp8iy6ogsxgpx5u",
		"Joe.Doe":    "iy9q119eutrkn8s1mk4r39qejnbu3n5q",
		"x":          "n85k5dsffewajk7k9i6dswmfyphfaed1",
	} {
		if got := WKDHash(local); got != want {
			t.Errorf("WKDHash(%q) = %s, want %s", local, got, want)
		}
	}
}
