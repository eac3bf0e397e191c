print("ztapd")
