module github.com/listcrypt/listcrypt

go 1.26.8
