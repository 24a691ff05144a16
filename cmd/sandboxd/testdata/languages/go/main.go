package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

func main() {
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	fmt.Println("in: " + strings.TrimSuffix(line, "\n"))
	for _, a := range os.Args[1:] {
		fmt.Println("arg: " + a)
	}
	fmt.Println("héllo wörld ✓")
	os.Exit(3)
}
