// Package plot draws the charts of pktipc's benchmark reports as SVG with
// gonum/plot: a latency CDF per case with one line per peer, and throughput
// against the number of concurrent clients. It is a separate package so
// that bench itself does not depend on gonum and its fonts.
//
// The charts are drawn from the records' CDF points, so results read back
// from `ipcbench run --json` plot as well as fresh ones.
package plot
