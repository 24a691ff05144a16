const x: number = nosuchthing;
console.log(x);
