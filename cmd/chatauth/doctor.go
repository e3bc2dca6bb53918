package main

func (c *cli) doctor(args []string) int { return c.usageError("doctor is not built yet") }
