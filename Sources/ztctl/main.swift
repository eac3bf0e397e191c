print("ztctl")
